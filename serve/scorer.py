"""The online filter-scoring application, for `serve run` and `serve deploy`.

    serve run serve.scorer:app manifest=out/manifest.json      # from the repository root
    serve deploy serve/config.yaml                              # on a cluster (args: in the file)

`app` is a Serve application builder: Serve calls it with the `key=value` arguments (or the config's `args:`),
which are raypipe.online.config.ServeSettings fields. Without `manifest`, $RAYPIPE_MANIFEST is used.
"""
import os


def app(args: dict):
    from raypipe.online.app import build_app
    from raypipe.online.config import ServeSettings

    args = dict(args)
    if "manifest" not in args and os.environ.get("RAYPIPE_MANIFEST"):
        args["manifest"] = os.environ["RAYPIPE_MANIFEST"]
    return build_app(ServeSettings(**args))
