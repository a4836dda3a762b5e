"""``autoresearch dashboard``: a live local web app over one research repository.

It reads only through ``autoresearch.session.Session`` (one per worker thread, since an SQLite connection
belongs to the thread that opened it) and steers the loop the same way a notebook would (``pause``,
``resume``, ``stop``, ``note``); the loop, in its own process, reads those between experiments.

Modules: ``security`` (who may ask: loopback, token, CSRF, Host), ``views`` (the JSON each page shows, pure
functions of a Session), ``watch`` (polls the ledger and pushes changes as server-sent events), ``app``
(the routes and ``serve``). The page itself is plain JS and CSS in ``static/``: no build step, no CDN.
"""
