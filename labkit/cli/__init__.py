"""The command line, ``labkit``: the group in ``main``, the commands by family (``lifecycle``,
``observe``, ``machine``), what they share in ``common`` and every table in ``render``."""
