"""``tfinpaint serve``: a local web page to paint a mask and inpaint, with an HTTP API.

The application lives in ``tfinpaint.serve.app`` (``create_app``) and needs the optional ``serve`` extra
(FastAPI, uvicorn, python-multipart); the page (``static/``) is shipped inside the package and loads nothing from
the network. This module imports none of them so that ``tfinpaint serve --help`` works without the extra.
"""
