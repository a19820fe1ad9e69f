"""Model and data set card templates, shipped inside the package as `kd_zoo.model_cards`."""
