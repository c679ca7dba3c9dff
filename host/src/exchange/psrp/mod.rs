//! Remote PowerShell (WS-Management + MS-PSRP at a CAS's `/PowerShell/`): the transport of
//! on-premises Exchange.

pub mod wsman;
