"""Reference workers: the client side of the original distleech, so the whole loop runs.

gazelle.py talks to a Gazelle site (rate limited), coordinator.py to the
distleech server, btclients.py to aria2 or Transmission; metadata.py and
download.py are the two workers, cli.py their `distleech worker` commands.
"""
