"""The web console: server-rendered pages at ``/`` that show pools, deployments and runs,
and drive them through the JSON API. ``routes.add_console(app)`` mounts it (create_app
does); ``pages`` reads and renders, ``session`` signs users in, ``render`` holds the
templates' filters, and ``static/console.js`` makes the buttons and forms work."""
