"""The intake service on uvicorn in a background thread, on a free 127.0.0.1 port, for tests and the benchmark."""
import threading
import time

import uvicorn

from pipelines.emulator import free_port
from services.intake.app import create_app


class RunningService:
    def __init__(self, config, publisher=None):
        self.app = create_app(config, publisher)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def intake(self):
        return self.app.state.intake

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the intake service did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join()
