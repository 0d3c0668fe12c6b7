import os

# Tests never reach a hub: everything they load is built here or shipped in assets/.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
