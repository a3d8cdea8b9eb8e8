"""DataModules: one multi-domain base, one thin file per dataset, transforms and demo data."""
