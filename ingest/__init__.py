"""Sources in: FIT files from folders and archives, Strava's API; each decoded into normalised runs and stored."""
