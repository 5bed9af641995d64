"""Prefect flows of lstm-forecast."""
import os

# Route the engine's own log records (epochs, device, decisions) into Prefect run logs.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "lstm_core")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Engine code also runs outside flow runs (notebooks, tests); its records then stay local.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
# Without PREFECT_API_URL each run starts a temporary local API. Prefect waits 20 s for it by default,
# too little on a loaded machine (its own start-up imports the server and migrates a database).
EPHEMERAL_STARTUP_TIMEOUT_S = 120
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_TIMEOUT_S))
