"""TransferTraj in PyTorch: the network, the masking scheme, data reading, training, metrics.

Entry points (model.train): pretrain, finetune, predict, evaluate. CLI subcommands: model.commands.register.
"""
