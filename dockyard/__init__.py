"""dockyard: provision a Docker host and keep a Python web app's stack converged on it."""
