"""Print gdl's progress events as the one line they carry.

``salt-run gdl.build`` reports long steps as runner progress events; Salt
prints each with the outputter the event names, and this one shows the
message alone ("creating app-1-blog-dev ... ok") instead of a nested dict.
"""

__virtualname__ = "gdl_progress"


def __virtual__():
    return __virtualname__


def output(data, **kwargs):  # pylint: disable=unused-argument
    """
    Return the progress message of a runner event, or the data as text.

    CLI Example:

    .. code-block:: bash

        salt-run gdl.build app=blog env=dev
    """
    event = data.get("event") if isinstance(data, dict) else None
    if isinstance(event, dict) and "message" in event:
        return str(event["message"])
    return str(data)
