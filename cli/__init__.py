"""The ``vybe`` command (:func:`cli.main.main`): the process entry of every part of the system.

The one package allowed to import ``gateway`` and ``workers`` (it starts them);
``python -m cli`` is the same command.
"""
