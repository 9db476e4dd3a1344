"""One linear chain of revisions, ``NNNN_slug.py``, each with a real downgrade."""
