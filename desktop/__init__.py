"""The desktop app: PySide6 views over core/. Long work runs in QThreads (desktop/tasks.py); the GUI
thread only draws and reacts."""
