"""What a network is: the grammar, the genome, its layers, mutation and the module archive. Torch-free."""
