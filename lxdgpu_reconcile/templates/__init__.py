"""Template images: a base image plus ordered steps, published under an alias and copied to hosts.

``recipe`` is pure (the recipe hash, image properties, what is current, names); ``files`` reads
the local files a template pushes; ``workflow`` builds and distributes one template (I/O), on top
of the raw LXD writes in ``execute.templates``.
"""
