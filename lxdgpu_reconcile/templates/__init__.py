"""Template images: a base image plus ordered steps, published under an alias and copied to hosts.

``recipe`` is pure (the recipe hash, image properties, what is current, names); ``sources``
reads the local files a template pushes. What to build, copy or point back is planned in
``planning.template_steps`` and carried out by ``execute.template_actions``.
"""
