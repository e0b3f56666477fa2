"""``redbatch dashboard``: a web page of a namespace's queues, workers and dead letters.

``cli`` (the click command, light), ``server`` (settings, socket, uvicorn), ``app`` (the
Starlette routes), ``security`` (the write token, sessions, CSRF), ``source`` (the Redis
work, through ``redbatch.ops``), ``overview`` (pure: shards summed, slot history, busy
ratios), ``static/`` (the page: plain HTML, CSS and JS, no build step, no library).
Starlette and uvicorn come with the extra ``redbatch[dashboard]``.
"""
