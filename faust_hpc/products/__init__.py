"""Science products made from the final cubes, and the run report.

- :mod:`~faust_hpc.products.moments` — moment maps (``MomentMapper``,
  ``make_moments_from_image``, ``make_all_moment_maps``);
- :mod:`~faust_hpc.products.qa` — channel-map QA plots (``CubeSet``,
  ``make_qa_plot``, ``make_qa_plots_from_image``, ``make_all_qa_plots``);
- :mod:`~faust_hpc.products.report` — timeline and table of a run from its manifest.

QA and moments read cubes one channel plane at a time
(:class:`~faust_hpc.products.cube.PlaneReader`), so their memory is bounded by
the image area, not the cube size. Nothing here imports CASA at import time.
"""
