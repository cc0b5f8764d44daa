"""The ``stridecare`` command line (typer): ``app`` holds the application and what every command shares, one
module per group of commands attaches its commands to it, and ``main`` (the entry point) imports them all."""
