"""bsfeat: featurize a manifest into a content-addressed Zarr feature store on Dask."""
