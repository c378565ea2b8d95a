"""Test-time adaptation methods (BN-adapt, Tent, SHOT-IM land here; see the TTA issue)."""
