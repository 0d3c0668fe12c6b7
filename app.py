"""The saferdemo app: `python app.py [--port 7860] [--base M --aligned M --grm M]`, the same as `saferdemo serve`.

Hugging Face Spaces run this file (README front matter: app_file app.py). With no flags or SAFERDEMO_*
environment variables it serves the bundled miniature models, offline, on a CPU.
"""

import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from saferdemo.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
