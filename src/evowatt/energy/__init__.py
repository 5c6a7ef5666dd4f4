"""Energy of inference (and training): meters, the analytical estimate, and the measurement protocol.

Every value carries the method that produced it: `measured:nvml`, `measured:rapl`, `estimated:model`,
`measured:clock` (latency) or `counted:model` (FLOPs, parameters). Import from the module that defines a
name (`evowatt.energy.protocol`, `.select`, `.estimate`, ...): the torch-free ones (`settings`, `sources`,
`profile`, `base`) stay importable without torch, so the config and the search can use them.
"""
