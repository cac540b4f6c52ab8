"""The run's state on disk: no MPI, no CASA.

Modules, one job each:

- :mod:`.locks`      flock-or-strict-soft file locks of the state directory;
- :mod:`.records`    the record schema (unit / run / freeze / finish / launcher / lease / revoke) and the status enum;
- :mod:`.manifest`   the append-only JSON-lines log and the unit states derived from it;
- :mod:`.journal`    rank 0's group commit of its records (one lock and one fsync per batch);
- :mod:`.leases`     several launchers on one run: who is alive, whose units are free;
- :mod:`.claim`      the claim step (read the others' tail, decide, commit, under the lock), ``--break-lock``;
- :mod:`.snapshot`   the folded state (:class:`~.snapshot.RunState`) and its snapshot on disk;
- :mod:`.frozen`     what the first launcher froze: spec digest, chunk counts, the plan they give;
- :mod:`.resume`     what a new launcher may trust, and what it cleans;
- :mod:`.fingerprint` what each output of a done unit looked like (size, cheap hash, table files);
- :mod:`.select`     the units a serial command (``image`` / ``moments`` / ``qa``) runs;
- :mod:`.view`       the read-only status view (``status``, ``rerun``, ``report``);
- :mod:`.invalidate` what ``rerun`` marks to be redone;
- :mod:`.images`     the final images of a run file.

Every path comes from :class:`faust_hpc.layout.RunLayout`.
"""
