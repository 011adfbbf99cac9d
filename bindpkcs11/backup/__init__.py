"""Key custody: KEK shares, wrap files between tokens, key import, the custody registry."""
