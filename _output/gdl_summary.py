"""Print a gdl command's return as ``gdl`` does: the URL first, then the rest as YAML.

``gdl.build`` names this outputter in its return; ``salt-run --out=...`` still
chooses another.
"""

__virtualname__ = "gdl_summary"


def __virtual__():
    return __virtualname__


def output(data, **kwargs):  # pylint: disable=unused-argument
    """
    Return the summary of a gdl command: the URL on the first line.

    CLI Example:

    .. code-block:: bash

        salt-run gdl.build app=blog env=dev
    """
    from gdl.cli import summary

    return "\n".join(summary(data))
