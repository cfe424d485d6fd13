"""Items, labellers, splitters, blocks, DataBlock and the data loaders."""
