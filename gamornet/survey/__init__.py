"""Survey scale: stamps cut from survey tiles at catalogue positions, and runs on Dask clusters.
"""
