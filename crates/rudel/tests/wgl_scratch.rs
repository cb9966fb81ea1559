mod linearizability;
