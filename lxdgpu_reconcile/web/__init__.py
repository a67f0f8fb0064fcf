"""The read-only fleet web page of ``serve``: a background observer keeps the last snapshot
(``board``), pure builders turn it into the page's data and Prometheus text (``view``,
``prometheus``), and a Starlette application serves them (``server``)."""
