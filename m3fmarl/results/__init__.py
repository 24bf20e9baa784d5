"""Results: curves and tables from run directories."""
