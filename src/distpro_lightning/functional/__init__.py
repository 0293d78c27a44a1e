"""Lightning-free math: alpha normalisations, distances (HCL, MSE, L1) and Hinton KD.
Testable without a Trainer; imports nothing above it."""
