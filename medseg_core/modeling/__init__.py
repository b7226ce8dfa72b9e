"""Model pieces shared by several projects."""
