//! The Azure simulator: Entra ID's token endpoint, managed identities with federated
//! credentials, Cosmos DB accounts with their RBAC and a minimal data plane.
