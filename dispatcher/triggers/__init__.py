"""Cloud-function entry points: AWS Lambda, Google Cloud Functions, Azure Functions.

Each module turns its platform's events into ticks (engine/tick.py) and HTTP requests to
the API in-process (host.py). Import only the one your platform runs: each loads its own
platform's library and no other cloud's.
"""
