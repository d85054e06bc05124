"""The agency service: each agency pulls its own routed reports (API and page); analysts search and re-refer."""
