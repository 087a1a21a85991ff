"""Built-in datasets shipped as package data (CSV files and their attribution in README.md).

Load them with ``jlstm.data.load_dataset(name)``; ``jlstm.data.list_datasets()`` names them.
"""
