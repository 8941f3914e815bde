__version__ = "0.1.0"

# SAELens learns our "switch" and "scale" architectures (scale_sae.saelens, chapter 07a) as soon as both packages are
# imported, in either order. Importing this package never imports SAELens (seconds) nor needs it: until `sae_lens` is
# imported, a finder on sys.meta_path only waits for it. Standard library only, so `import scale_sae` stays cheap.
import importlib as _importlib, importlib.abc as _abc, importlib.util as _util, sys as _sys


def _register_with_saelens():
    try: _importlib.import_module("scale_sae.saelens")
    except Exception as err:  # a failed registration must not break the import of SAELens itself
        import warnings
        warnings.warn(f"scale-sae could not register its SAE architectures with SAELens: {err!r}")


class _RegisterAfterSAELens(_abc.MetaPathFinder):
    "Loads nothing itself: when `sae_lens` is imported, wraps its loader so that our architectures register after it."
    searching = False

    def find_spec(self, name, path=None, target=None):
        if name != "sae_lens" or self.searching: return None
        self.searching = True  # the search below asks every finder again, this one included
        try: spec = _util.find_spec(name)
        finally: self.searching = False
        if spec is None or spec.loader is None: return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            if self in _sys.meta_path: _sys.meta_path.remove(self)
            _register_with_saelens()
        spec.loader.exec_module = exec_module
        return spec


if "sae_lens" in _sys.modules: _register_with_saelens()
elif not any(type(f).__name__ == "_RegisterAfterSAELens" for f in _sys.meta_path):
    _sys.meta_path.insert(0, _RegisterAfterSAELens())
