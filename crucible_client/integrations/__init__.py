"""Reporters for training frameworks, each in a module that imports its framework.

    from crucible_client.integrations.lightning import CrucibleLogger      # extra [lightning]
    from crucible_client.integrations.huggingface import CrucibleCallback  # extra [huggingface]

Nothing here is imported by `crucible_client` itself: a worker that uses neither framework
never loads them.
"""
