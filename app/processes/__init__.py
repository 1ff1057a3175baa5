"""The processes `distleech run` supervises: the bundled CouchDB (bundled.py), gunicorn
(server.py), and the supervisor that starts and stops them (supervisor.py).
"""
