"""Provider adapters: one module per compute target, all behind providers.base's interface."""
