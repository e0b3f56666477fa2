"""The operators' work behind ``redbatch status``, ``inspect``, ``dlq`` and ``queue``: one
package (or module) per command, no click here (the commands are in ``redbatch.cli``)."""
