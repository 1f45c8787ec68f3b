"""Small helpers shared across keras-slam packages."""
