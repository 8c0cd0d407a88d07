"""The MACE architecture in e3nn: radial basis, harmonics, interactions, products, readouts."""
