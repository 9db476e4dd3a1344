"""Image preparation for the network: the seed's slice montages, intensity normalisation, montage pictures."""
