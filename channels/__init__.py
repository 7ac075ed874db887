"""One module per transport (telegram, email, web, console, axis). Only this package
imports transport libraries; the core sees Inbound/Outbound messages only."""
