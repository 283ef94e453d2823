"""Test callback: append every task result to $HOSTLOCK_TEST_RECORD as one JSON line."""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'record'
    CALLBACK_NEEDS_ENABLED = True

    def _record(self, result, status):
        path = os.environ.get('HOSTLOCK_TEST_RECORD')
        if not path:
            return
        data = getattr(result, '_result', None)
        if data is None:
            data = getattr(result, 'result', {})
        line = {
            'host': result._host.get_name(),
            'task': result._task.get_name(),
            'status': status,
            'time': time.time(),
            'result': data,
        }
        with open(path, 'a') as f:
            f.write(json.dumps(line, default=str) + '\n')

    def v2_runner_on_ok(self, result):
        self._record(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, 'failed')

    def v2_runner_on_skipped(self, result):
        self._record(result, 'skipped')
