"""Sources in: activity files (FIT, GPX, TCX) from folders and archives, Strava's API and the connectors
(intervals.icu, Garmin Connect); each decoded into normalised runs and stored."""
