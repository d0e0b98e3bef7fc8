"""The streamdash toolbox: local stack, device simulator, notebook runtime, dashboard checks, the `streamdash` CLI.

It imports the job (`streamdash`); the job never imports it.
"""
