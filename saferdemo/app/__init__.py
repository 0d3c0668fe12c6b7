"""The side-by-side Gradio app.

- `models`: which checkpoints run (flags, environment, the bundled defaults) and loading them into engines;
- `session`: a side-by-side comparison, both columns' safety loops at once, and the conversation's history;
- `controller`: what the chat's events do (submit, respond, regenerate, stop, clear, audit), testable without
  a server; `render`: how a turn looks in a chat; `ui`: the layout and the wiring; `charts`; `observability`
  (turn logs, /health).
"""
