"""The emulator backend: Speakeasy/unicorn loading, Windows API models, callbacks, and batch running in
isolated child processes."""
