"""DiffBYOL-A as an s3prl upstream, in s3prl's own layout (``expert.py`` + ``hubconf.py``).

Installed with hear-diffbyola as ``hear_diffbyola.s3prl_upstream``; ``hear-diffbyola s3prl-install``
links this folder into an s3prl checkout as ``s3prl/upstream/diffbyola``.
"""
