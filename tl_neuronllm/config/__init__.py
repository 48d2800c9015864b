"""Config layer: the options of a run (:class:`IdentifyConfig`) and what a result records (:class:`ResultConfig`).

Plain validated records; they check names against the registries of the layers below (methods, hooks).
"""
